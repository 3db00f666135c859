import subprocess
import sys

import pytest


def test_import_is_light_and_lazy():
    code = (
        "import sys; import trl_ext; "
        "heavy = [m for m in ('diffusers', 'vec2text', 'detoxify', 'deepspeed', 'trl', 'transformers') if m in sys.modules]; "
        "print(heavy)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"  # no heavy module imported: speed itself is not asserted (no timed tests)


def test_public_names_resolve_lazily():
    import trl_ext

    assert trl_ext.resolve_pretrained.__module__ == "trl_ext.hub"
    with pytest.raises(AttributeError, match="NotAName"):
        _ = trl_ext.NotAName
