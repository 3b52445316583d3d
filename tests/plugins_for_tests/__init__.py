"""Small plugin modules the tests load by module name (built-ins, entry points).

Importing this package imports none of them: a test can then tell from ``sys.modules``
whether the plugin host imported a module.
"""
