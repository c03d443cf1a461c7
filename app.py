"""Start LoRA Lab from a checkout: `python app.py [--host H] [--port P] [--share] ...` (the same as `lora-lab`).

The flags, the login and the launch live in `lora_demo/launch.py`; importing this file starts nothing.
"""

from lora_demo.launch import build_parser, main, parse_args, resolve_auth

__all__ = ["build_parser", "main", "parse_args", "resolve_auth"]

if __name__ == "__main__":
    main()
