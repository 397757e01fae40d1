//! GGUF writer (in progress).
