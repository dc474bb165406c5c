"""The wire contract's stubs (yolohook.v1), generated from proto/ by protoc at build time."""
