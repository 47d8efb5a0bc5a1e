"""xpcnn.testing's counters price known aten traces exactly."""
import pytest

from xpcnn.testing import CupyCosts

torch = pytest.importorskip("torch")


def priced(fn, *inputs):
    """(kernels, host-to-device copies, syncs, kernels per op) of fn(*inputs), inputs made outside the count."""
    with CupyCosts() as costs:
        fn(*inputs)
    return costs.kernels, costs.copies, costs.syncs, dict(costs.by_op)


def test_stack_and_concatenate_cost_a_copy_per_array_up_to_8_then_one_kernel_and_pointer_tables():
    small = [torch.ones(2, 3) for _ in range(9)]
    assert priced(torch.stack, small[:3]) == (3, 0, 0, {"stack": 3})              # one copy kernel per array
    assert priced(torch.cat, small[:8]) == (8, 0, 0, {"cat": 8})                  # 8 is still per array
    assert priced(torch.stack, small) == (1, 1, 0, {"stack": 1})                  # 9: a table of pointers
    assert priced(torch.cat, small[:8] + [torch.ones(4, 3)]) == (1, 3, 0, {"cat": 1})   # unequal: + offsets, strides
    assert priced(torch.cat, small[:8] + [torch.ones(3, 2).T]) == (1, 3, 0, {"cat": 1})  # not contiguous: the same
    assert priced(torch.cat, small[:8] + [torch.ones(2, 3, dtype=torch.float64)])[:3] == (9, 0, 0)  # mixed dtypes
    large = [torch.ones(2 ** 19) for _ in range(9)]                               # 2 MiB each: per array again
    assert priced(torch.cat, large) == (9, 0, 0, {"cat": 9})


def test_constant_pad_is_a_fill_and_a_copy_and_a_nonzero_value_fills_each_padded_side():
    x = torch.ones(2, 3, 4, 4)
    assert priced(torch.nn.functional.pad, x, (1, 1, 1, 1)) == (2, 0, 0, {"constant_pad_nd": 2})
    assert priced(lambda: torch.nn.functional.pad(x, (1, 1, 0, 2), value=float("-inf"))) == (
        4, 0, 0, {"constant_pad_nd": 4})                                          # copy + 3 padded sides


def test_mask_indexing_and_nonzero_sync_and_a_python_number_on_the_device_is_a_copy():
    values, mask = torch.arange(1000.0), torch.arange(1000) > 4
    # prefix sum of 1000 (block sums, their scan, add back: 3) + the gather; its count read on the host
    assert priced(lambda: values[mask]) == (4, 0, 1, {"index": 4})
    assert priced(lambda: values[:10][mask[:10]]) == (2, 0, 1, {"index": 2})
    assert priced(torch.nonzero, mask[:10]) == (2, 0, 1, {"nonzero": 2})          # bool: scan + kernel
    assert priced(torch.asarray, 0.0) == (0, 1, 0, {})
    assert priced(lambda: values.sum().item()) == (1, 0, 1, {"sum": 1})
    assert priced(torch.add, values, values) == (1, 0, 0, {"add": 1})             # PyTorch's rule otherwise
