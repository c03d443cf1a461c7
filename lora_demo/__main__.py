import sys

from lora_demo.cli import main

sys.exit(main())
