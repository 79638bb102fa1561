import sys

from fractal_llm.cli import main

sys.exit(main())
