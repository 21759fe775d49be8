"""Transports: what turns a prompt of token ids into generated tokens, in-process or over
HTTP. Each declares what it can do; prompt building uses only that."""
