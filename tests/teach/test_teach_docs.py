"""Every worked example in docs/math.md is what xpcnn prints today."""
import importlib.util
import pathlib

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]
spec = importlib.util.spec_from_file_location("update_docs", ROOT / "scripts" / "update_docs.py")
update_docs = importlib.util.module_from_spec(spec)
spec.loader.exec_module(update_docs)
BLOCKS = list(update_docs.BLOCK.finditer(update_docs.DOC.read_text()))


def test_the_guide_has_a_block_for_every_example():
    from xpcnn import teach
    assert sorted({update_docs.parse(b.group("spec"))[0] for b in BLOCKS}) == sorted(teach.EXAMPLES)


@pytest.mark.parametrize("block", BLOCKS, ids=[b.group("spec") for b in BLOCKS])
def test_docs_numbers_equal_what_xpcnn_computes(block):
    assert block.group("body") == update_docs.render(block.group("spec")), (
        "docs/math.md is out of date: run python scripts/update_docs.py")
