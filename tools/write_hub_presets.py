"""(Re)write the named keras-hub presets shipped in keras_pf/hub/builtin_presets/ from
the weights registry: run after the registry or a backbone's config changes
(tests/hub/test_hub_presets.py fails until then).

    python tools/write_hub_presets.py [NAME ...]
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from keras_pf.hub import presets  # noqa: E402


def main(names):
    for name in names or sorted(presets.builtin_table()):
        print(presets.write_builtin_preset(name))


if __name__ == "__main__":
    main(sys.argv[1:])
