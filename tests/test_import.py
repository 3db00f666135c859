import subprocess
import sys

import pytest


def test_import_is_light_and_lazy():
    code = (
        "import sys, time; t = time.perf_counter(); import trl_ext; elapsed = time.perf_counter() - t; "
        "heavy = [m for m in ('diffusers', 'vec2text', 'detoxify', 'deepspeed', 'trl', 'transformers') if m in sys.modules]; "
        "print(elapsed, heavy)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split(
        maxsplit=1
    )
    assert float(out[0]) < 2.0
    assert out[1].strip() == "[]"


def test_public_names_resolve_lazily():
    import trl_ext

    assert trl_ext.resolve_pretrained.__module__ == "trl_ext.hub"
    with pytest.raises(AttributeError, match="NotAName"):
        _ = trl_ext.NotAName
