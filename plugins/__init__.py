"""Built-in plugins: one package per route family."""
