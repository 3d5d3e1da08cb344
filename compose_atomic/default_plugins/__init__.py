"""Built-in behaviour, registered as plugins like any third-party one."""
