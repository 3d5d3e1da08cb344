"""Shell completion (bash, zsh, fish) through click 8, with the project's service names."""
