import sys

from retina_unet.study.cli import main

sys.exit(main())
