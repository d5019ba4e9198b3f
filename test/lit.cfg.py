# -*- Python -*-
# lit configuration of qtune's tests.

import os
import shutil
import subprocess

import lit.formats
from lit.llvm import llvm_config
from lit.llvm.subst import ToolSubst

config.name = "QTUNE"
config.test_format = lit.formats.ShTest(not llvm_config.use_lit_shell)
config.suffixes = [".mlir", ".test"]
config.excludes = ["Inputs", "CMakeLists.txt", "lit.cfg.py", "lit.site.cfg.py"]
config.test_source_root = os.path.dirname(__file__)
config.test_exec_root = os.path.join(config.qtune_obj_root, "test")

config.environment["FILECHECK_OPTS"] = "--enable-var-scope"
config.substitutions.append(("%PATH%", config.environment["PATH"]))
config.substitutions.append(("%python", config.python_executable))
config.substitutions.append(("%inputs", os.path.join(config.test_source_root, "Inputs")))
config.substitutions.append(("%examples", os.path.join(config.test_source_root, "..", "examples")))

llvm_config.use_default_substitutions()
llvm_config.with_environment("PATH", config.llvm_tools_dir, append_path=True)

tool_dirs = [config.qtune_tools_dir, config.llvm_tools_dir]
tools = ["qtune-opt", "qtune-interp", "qtune-compile", "qtune-import", "qtune-export", "qtune-quantize", "qtune-run"]
llvm_config.add_tool_substitutions(tools, tool_dirs)


def cuda_device_answers():
    """True when an NVIDIA GPU answers on this machine (GPU tests need one)."""
    smi = shutil.which("nvidia-smi")
    if not smi:
        return False
    try:
        out = subprocess.run([smi, "-L"], capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.SubprocessError):
        return False
    return out.returncode == 0 and "GPU" in out.stdout


if cuda_device_answers():
    config.available_features.add("cuda-device")
else:
    lit_config.note("no CUDA device answers here: tests that need one "
                    "(REQUIRES: cuda-device) are reported UNSUPPORTED")

# ptxas (the CUDA toolkit's, as qtune-compile finds it) reports each kernel's
# registers and spills; tests that read them need it.
ptxas = shutil.which("ptxas") or (
    "/usr/local/cuda/bin/ptxas" if os.path.exists("/usr/local/cuda/bin/ptxas") else None)
if ptxas:
    config.available_features.add("ptxas")
    config.substitutions.append(("%ptxas", ptxas))
else:
    lit_config.note("no ptxas here: tests that read its report (REQUIRES: ptxas) "
                    "are reported UNSUPPORTED")
