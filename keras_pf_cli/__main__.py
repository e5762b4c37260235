import sys

from keras_pf_cli import main

sys.exit(main())
