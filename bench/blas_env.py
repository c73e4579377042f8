"""Import before torch or numpy: gives this process's OpenBLAS the kernels poa runs.

poa chooses OPENBLAS_CORETYPE where OpenBLAS does not know the CPU and falls back to its SSE3
(Prescott) kernels (runtime/backend_cpu.c, poa_choose_library_settings), and `poa version` says
which kernels it runs. A peer timed against poa must not run slower kernels of the same library,
so the benchmarks set the same core type for their own OpenBLAS (torch's libblas, numpy's)
unless the user set one. CORETYPE says what was chosen and why.
"""
import os
import re
import subprocess

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _coretype():
    if "OPENBLAS_CORETYPE" in os.environ:
        return os.environ["OPENBLAS_CORETYPE"] + " (given)"
    try:
        out = subprocess.run([os.path.join(ROOT, "build/poa"), "version"], capture_output=True,
                             text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        return "OpenBLAS's own detection (build/poa version did not run)"
    chosen = re.search(r"OPENBLAS_CORETYPE=(\w+)", out)
    if not chosen:
        return "OpenBLAS's own detection, as poa's"
    os.environ["OPENBLAS_CORETYPE"] = chosen.group(1)
    return chosen.group(1) + " (poa's choice: OpenBLAS fell back to Prescott)"


CORETYPE = _coretype()
