"""``python -m retina_unet ...`` = the ``retina-unet`` command."""

import sys

from retina_unet.cli import main

sys.exit(main())
