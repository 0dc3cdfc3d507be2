"""The built-in Microsoft tenant emulator (Entra ID token endpoint, Graph security, Management
Activity API). See ``docs/emulator.md``."""
