"""The winograd lesson's numbers, checked by hand and against the direct sums."""
import numpy as np

from xpcnn import teach
from xpcnn.teach.examples import WINOGRAD_FILTER, WINOGRAD_SIGNAL


def test_four_products_give_the_two_outputs_of_six():
    v = teach.run("winograd").values
    d, g = np.array(WINOGRAD_SIGNAL), np.array(WINOGRAD_FILTER)
    direct = [d[0:3] @ g, d[1:4] @ g]                                     # 4.5, 6
    np.testing.assert_allclose(v["y_direct"], direct)
    m1, m2, m3, m4 = v["m"]
    assert (m1, m2, m3, m4) == (-1.0, 3.75, 1.75, -4.0)
    np.testing.assert_allclose([m1 + m2 + m3, m2 - m3 - m4], direct)


def test_the_2d_tile_takes_16_products_for_the_36_of_the_direct_sums():
    lesson = teach.run("winograd")
    v = lesson.values
    assert v["M"].shape == (4, 4) and v["Y"].shape == (2, 2)
    np.testing.assert_allclose(v["M"], v["U"] * v["V"])
    np.testing.assert_allclose(v["Y"], v["Y_direct"])
    assert "direct: 2x2 outputs x 9 products = 36; F(2x2, 3x3): 4x4 = 16, 2.25x fewer" in str(lesson)
    assert "✗" not in str(lesson)
