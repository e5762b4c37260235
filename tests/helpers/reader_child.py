"""Run the checkpoint reader in a child process under memory and time limits, so that a
crash, a hang or a memory blow-up fails the test instead of killing it.

    python reader_child.py read PATH [MAX_ELEMENTS]   -> prints `OK <n tensors>` or `ERROR <class>: <message>`
    python reader_child.py fuzz EXAMPLES SEED         -> the hypothesis fuzz run (reader_fuzz.py)

The reader module is loaded by path: importing the `keras_pf` package would import
TensorFlow, whose start-up costs seconds and gigabytes of address space.
"""

import importlib.util
import os
import pathlib
import resource
import subprocess
import sys

HERE = pathlib.Path(__file__).resolve().parent
READER = HERE.parents[1] / "keras_pf" / "weights" / "torch_reader.py"
MEMORY_LIMIT = 1536 * 2 ** 20  # address space of the child, bytes
EXAMPLE_SECONDS = 10  # one file must be read or refused within this


def load_reader():
    spec = importlib.util.spec_from_file_location("torch_reader_under_test", READER)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def peak_rss():
    """This process's peak resident memory in bytes (VmHWM: unlike getrusage's
    ru_maxrss, not inherited from the parent across exec)."""
    for line in pathlib.Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    return 0


def read(path, max_elements=None):
    """One line: `OK <tensors> <bytes> grew=<peak RSS growth>` or `ERROR <class>: <message>`."""
    reader = load_reader()
    kwargs = {} if max_elements is None else {"max_elements": int(max_elements)}
    before = peak_rss()
    try:
        state = reader.load_state_dict(path, **kwargs)
    except reader.CheckpointError as error:
        return f"ERROR {type(error).__name__}: {error}"
    grew = peak_rss() - before
    return f"OK {len(state)} {sum(v.nbytes for v in state.values())} grew={grew}"


def run(args, timeout=60, memory=MEMORY_LIMIT, env=None):
    """Run this script with `args` in a child limited to `memory` bytes of address space
    and `timeout` seconds. Returns the CompletedProcess (a crash: negative returncode)."""
    # (the child sets the limit itself: preexec_fn is unsafe in a threaded parent)
    child_env = dict(os.environ, OPENBLAS_NUM_THREADS="1", OMP_NUM_THREADS="1",
                     READER_CHILD_MEMORY=str(memory), **(env or {}))
    return subprocess.run([sys.executable, __file__, *map(str, args)], capture_output=True,
                          text=True, timeout=timeout, env=child_env)


if __name__ == "__main__":
    import faulthandler

    memory = int(os.environ.get("READER_CHILD_MEMORY", MEMORY_LIMIT))
    resource.setrlimit(resource.RLIMIT_AS, (memory, memory))
    faulthandler.enable()
    if sys.argv[1] == "read":
        faulthandler.dump_traceback_later(EXAMPLE_SECONDS, exit=True)
        print(read(*sys.argv[2:]))
    else:
        sys.path.insert(0, str(HERE))
        import reader_fuzz

        reader_fuzz.main(load_reader(), int(sys.argv[2]), int(sys.argv[3]))
