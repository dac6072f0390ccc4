"""``jacobian_sparsity(..., classify=True)``: constant and variable Jacobian entries, against autograd.

Sound: every entry called constant has the same dense Jacobian value (to round-off) at several
random points.  Partition: constant and variable are disjoint and their union is the pattern.
Tight on hand cases: entries that autograd shows varying are variable, and the linear ones
(stencils, ``A @ x``, fixed-index gathers, ``x * c``) are constant.
"""
import pytest
import torch
import torch.nn.functional as F
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import trackjac
from trackjac.coloring import color_columns, color_rows

from dense_reference import as_dense, dense_jacobian, random_points
from problems import brusselator, brusselator_pattern, brusselator_point  # benches/problems.py
from random_programs import CHOICES, program_args, programs, run_program, shapes

POINTS = 4


def _blocks(res, n_args):
    return list(res) if n_args > 1 else [res]


def _partition(f, args, **kw):
    """The classification as dense masks per argument, after checking it partitions the pattern."""
    pats = _blocks(trackjac.jacobian_sparsity(f, *args, **kw), len(args))
    cls = trackjac.jacobian_sparsity(f, *args, classify=True, **kw)
    assert isinstance(cls, trackjac.JacobianClassification)
    const, var = _blocks(cls.constant, len(args)), _blocks(cls.variable, len(args))
    out = []
    for p, c, v in zip(pats, const, var):
        assert c.layout == p.layout == v.layout
        p, c, v = as_dense(p), as_dense(c), as_dense(v)
        assert c.shape == v.shape == p.shape
        assert not (c & v).any(), "constant and variable overlap"
        assert torch.equal(c | v, p), "constant | variable is not the pattern"
        out.append((c, v))
    return out


def _jacobians(f, make_args, points=POINTS):
    """Dense Jacobian blocks per argument at ``points`` points: a list over arguments of
    ``(points, out, in)`` stacks."""
    per_point = []
    for s in range(points):
        args = make_args(s)
        J = dense_jacobian(f, *args)
        per_point.append(list(J) if len(args) > 1 else [J])
    return [torch.stack(bs) for bs in zip(*per_point)]


def _spread(J):
    """How much each entry's value changes between points, relative to its size."""
    return (J.amax(0) - J.amin(0)) / (1 + J.abs().amax(0))


def check(f, make_args, *, constant=None, variable=None, tight=True):
    """Classify ``f`` at ``make_args(0)`` and compare with autograd at ``POINTS`` points.

    ``constant`` / ``variable``: ``"all"`` (every pattern entry is that) or per-argument masks.
    ``tight``: every variable entry changes value between the points."""
    args = make_args(0)
    parts = _partition(f, args)
    Js = _jacobians(f, make_args)
    for k, ((c, v), J) in enumerate(zip(parts, Js)):
        spread = _spread(J)
        assert (spread[c] < 1e-9).all(), f"argument {k}: an entry called constant changes value"
        if tight:
            assert (spread[v] > 1e-9).all(), f"argument {k}: an entry called variable has one value"
        for want, got, other in ((constant, c, v), (variable, v, c)):
            if want == "all":
                assert not other.any(), f"argument {k}: expected every entry {'constant' if got is c else 'variable'}"
            elif want is not None:
                assert torch.equal(got, want[k])
    return parts


def points(*shapes_, seed=0):
    return random_points(shapes_, seed)


# -- generated programs -----------------------------------------------------------------------

@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(programs, shapes, st.sampled_from(["sets", "bits"]), st.sampled_from([None, "drop"]))
def test_program_constant_entries_are_constant(steps, shape, representation, constant_zeros):
    f = lambda x, r, c: run_program(steps, x, r, c)  # noqa: E731
    make = lambda s: program_args(shape, 10 + s)  # noqa: E731
    parts = _partition(f, make(0), representation=representation, constant_zeros=constant_zeros)
    for (c, _), J in zip(parts, _jacobians(f, make, 3)):
        assert (_spread(J)[c] < 1e-9).all(), f"a constant entry changes value in {steps}"


# the steps of random_programs that are linear maps of the state and the sources
LINEAR_STEPS = ["add_x", "roll", "flip", "cumsum", "rowsum", "matmul", "transpose_view", "reshape_view", "slice_cat",
                "gather_const", "index_rows", "where_const", "index_add", "scatter_add", "stack_sum"]


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.tuples(st.sampled_from(LINEAR_STEPS), st.integers(0, 5)), min_size=1, max_size=6), shapes)
def test_linear_program_is_all_constant(steps, shape):
    f = lambda x, r, c: run_program(steps, x, r, c)  # noqa: E731
    check(f, lambda s: program_args(shape, 30 + s), constant="all")


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(programs, shapes, st.sampled_from(sorted(CHOICES)))
def test_program_with_choice_constant_entries_are_constant(steps, shape, choice):
    choose = CHOICES[choice]
    f = lambda x, r, c: choose(run_program(steps, x, r, c))  # noqa: E731
    make = lambda s: program_args(shape, 20 + s)  # noqa: E731
    parts = _partition(f, make(0))
    for (c, v), J in zip(parts, _jacobians(f, make, 3)):
        assert (_spread(J)[c] < 1e-9).all(), f"a constant entry changes value in {steps} + {choice}"
        if choice != "none":
            assert not c.any(), "entries through a value-dependent choice are variable"


@settings(max_examples=30, deadline=None)
@given(st.integers(1, 5), st.integers(1, 5), st.integers(0, 10 ** 6))
def test_linear_maps_of_generated_shapes_are_constant(m, n, seed):
    A = torch.randn(m, n, dtype=torch.double, generator=torch.Generator().manual_seed(seed))
    idx = torch.randperm(n, generator=torch.Generator().manual_seed(seed))

    def f(x):
        y = A @ x + 0.5 * x.flip(0)[: m].sum() + x[idx][:1].expand(m)
        return torch.cat([y.cumsum(0), x.roll(1) / 3])
    check(f, points((n,), seed=seed), constant="all")


# -- hand cases ---------------------------------------------------------------------------------

A53 = torch.linspace(-1, 1, 15, dtype=torch.double).reshape(5, 3) + 0.05   # no zero entry
K = torch.tensor([[[0.5, -1.0, 2.0]]], dtype=torch.double)


def _buffer(x):
    buf = torch.zeros(7, dtype=x.dtype)
    buf[1:6] = 2 * x            # copy_ into a slice: constant
    buf[2:4] += x[:2]           # in-place add through a view: constant
    buf[0] = x[0] * x[1]        # variable
    buf.mul_(3.0)               # in-place scaling: stays constant
    return buf


def _buffer_expected():
    var = torch.zeros(7, 5, dtype=torch.bool)
    var[0, :2] = True
    const = torch.zeros(7, 5, dtype=torch.bool)
    const[torch.arange(1, 6), torch.arange(5)] = True
    const[2, 0] = const[3, 1] = True
    return [const], [var]


def _transposed_write(x):
    z = torch.zeros(3, 2, dtype=x.dtype)
    z.t()[0] = x[:3]            # constant, written through a transposed view
    z.t()[1].copy_(x[3:] ** 2)  # variable
    return z


CONSTANT = {
    "A@x": (lambda x: A53 @ x, [(3,)]),
    "mm": (lambda x: A53 @ x.reshape(3, 2), [(6,)]),
    "addmm": (lambda x: torch.addmm(torch.ones(5, 2, dtype=x.dtype), A53, x.reshape(3, 2), beta=2, alpha=3), [(6,)]),
    "addmm_self": (lambda x: torch.addmm(x.reshape(5, 2), A53, torch.ones(3, 2, dtype=x.dtype)), [(10,)]),
    "matmul_vec_mat": (lambda x: x @ A53, [(5,)]),
    "matmul_batched": (lambda x: x.reshape(2, 2, 5) @ A53, [(20,)]),
    "bmm": (lambda x: torch.bmm(A53.expand(2, 5, 3), x.reshape(2, 3, 1)), [(6,)]),
    "x*c": (lambda x: x * 3.0, [(4,)]),
    "x*tensor": (lambda x: x * torch.arange(1.0, 5.0, dtype=x.dtype), [(4,)]),
    "x/c": (lambda x: x / torch.arange(1.0, 5.0, dtype=x.dtype), [(4,)]),
    "add_sub": (lambda x: (x + x.flip(0)) - 2 * x.roll(1), [(4,)]),
    "sum_mean": (lambda x: x.sum(0) + x.mean(1, keepdim=True), [(3, 4)]),
    "cumsum": (lambda x: x.cumsum(1), [(3, 4)]),
    "index_select": (lambda x: x.index_select(0, torch.tensor([2, 0, 0])), [(3,)]),
    "gather": (lambda x: x.gather(1, torch.tensor([[1, 0], [0, 0]])), [(2, 2)]),
    "index": (lambda x: x[torch.tensor([3, 1, 1])], [(4,)]),
    "cat_stack": (lambda x: torch.stack([torch.cat([x, x[:1]]), torch.cat([x[1:], x[:2]])]), [(3,)]),
    "where_constant_condition": (lambda x: torch.where(torch.arange(4) % 2 == 0, x, 2 * x), [(4,)]),
    "to_copy_clone_expand": (lambda x: x.to(torch.float32).to(torch.float64).clone().expand(2, 4), [(4,)]),
    "conv1d": (lambda x: F.conv1d(x.reshape(1, 1, 6), K, padding=1), [(6,)]),
    "conv2d": (lambda x: F.conv2d(x.reshape(1, 1, 4, 4), torch.ones(2, 1, 2, 2, dtype=x.dtype)), [(16,)]),
    "dropout_eval": (lambda x: F.dropout(x, 0.5, training=False), [(4,)]),
    "two_args": (lambda x, y: x[:2] * 2 + y.sum(), [(3,), (2,)]),
    "linear": (lambda x: F.linear(x.reshape(2, 3), A53, torch.ones(5, dtype=x.dtype)), [(6,)]),
    "einsum": (lambda x: torch.einsum("ij,jk->ik", A53, x.reshape(3, 2)), [(6,)]),
    "pad_pool": (lambda x: F.avg_pool1d(F.pad(x.reshape(1, 1, 6), (1, 1)), 2), [(6,)]),
    "foreach_add_mul": (lambda x: torch.cat(torch._foreach_mul(torch._foreach_add([x, x], [x.flip(0), x]), 2.0)),
                        [(4,)]),
    "foreach_mul_constant": (lambda x: torch._foreach_mul([x], [torch.arange(4.0, dtype=x.dtype)])[0], [(4,)]),
    "complex_view": (lambda x: torch.view_as_real(torch.view_as_complex(x.reshape(3, 2)) * (1 + 2j)).reshape(-1),
                     [(6,)]),
}


@pytest.mark.parametrize("name", sorted(CONSTANT))
def test_linear_ops_give_constant_entries(name):
    f, shp = CONSTANT[name]
    parts = check(f, points(*shp), constant="all")
    assert any(c.any() for c, _ in parts)


VARIABLE = {
    "x*x": (lambda x: x * x, [(4,)]),
    "sin": (torch.sin, [(4,)]),
    "exp": (torch.exp, [(4,)]),
    "pow": (lambda x: x ** 3, [(4,)]),
    "relu": (torch.relu, [(6,)]),
    "c/x": (lambda x: 1.0 / x, [(4,)]),
    "where_from_x": (lambda x: torch.where(x > 0, x, 2 * x), [(6,)]),
    "index_from_x": (lambda x: x[x.argsort()], [(4,)]),
    "gather_from_x": (lambda x: x.gather(0, x.argsort()), [(4,)]),
    "matmul_two_tracked": (lambda x, y: x.reshape(2, 3) @ y.reshape(3, 2), [(6,), (6,)]),
    "x*y": (lambda x, y: x * y, [(3,), (3,)]),
    "conv_tracked_kernel": (lambda x, k: F.conv1d(x.reshape(1, 1, 5), k.reshape(1, 1, 2)), [(5,), (2,)]),
    "linear_then_square": (lambda x: (A53 @ x) ** 2, [(3,)]),
    "complex_square": (lambda x: torch.view_as_real(torch.view_as_complex(x.reshape(3, 2)) ** 2).reshape(-1),
                       [(6,)]),
    "softmax": (lambda x: torch.softmax(x, 0), [(4,)]),
    "foreach_mul_tracked": (lambda x: torch._foreach_mul([x], [x.flip(0)])[0], [(4,)]),
    "foreach_exp": (lambda x: torch._foreach_exp([x])[0], [(4,)]),
    # value-selecting reductions: their backward reads the output indices
    "sort": (lambda x: x.sort().values, [(5,)]),
    "max_dim": (lambda x: x.reshape(2, 3).max(1).values, [(6,)]),
    "topk": (lambda x: x.topk(2).values, [(5,)]),
    "kthvalue": (lambda x: x.kthvalue(2).values, [(5,)]),
    "median": (lambda x: x.median(), [(5,)]),
    "amax": (lambda x: x.reshape(2, 3).amax(1), [(6,)]),
    "cummax": (lambda x: x.cummax(0).values, [(5,)]),
    "max_pool": (lambda x: F.max_pool1d(x.reshape(1, 1, 6), 2), [(6,)]),
    "abs_clamp": (lambda x: x.abs() + x.clamp(-0.5, 0.5), [(5,)]),
    "prelu": (lambda x: F.prelu(x.reshape(1, 2, 3), torch.tensor([0.25, 2.0], dtype=x.dtype)), [(6,)]),
}

# 0/1 (selection) Jacobians: an entry may keep its value at a few points
SELECTING = {"relu", "where_from_x", "index_from_x", "gather_from_x", "sort", "max_dim", "topk", "kthvalue",
             "median", "amax", "cummax", "max_pool", "abs_clamp", "prelu"}


@pytest.mark.parametrize("name", sorted(VARIABLE))
def test_nonlinear_ops_give_variable_entries(name):
    f, shp = VARIABLE[name]
    check(f, points(*shp, seed=3), variable="all", tight=name not in SELECTING)


def test_dropout_is_variable():
    x = torch.randn(50, dtype=torch.double)
    cls = trackjac.jacobian_sparsity(lambda x: F.dropout(x, 0.5, training=True), x, classify=True)
    assert cls.constant._nnz() == 0 and cls.variable._nnz() > 0
    # the mask is drawn again at each call: autograd's entries change between calls
    torch.manual_seed(0)
    J = torch.stack([dense_jacobian(lambda x: F.dropout(x, 0.5, training=True), x) for _ in range(3)])
    assert (_spread(J) > 0).any()


def test_random_matrix_drawn_inside_is_variable():
    x = torch.randn(3, dtype=torch.double)
    cls = trackjac.jacobian_sparsity(lambda x: torch.randn(2, 3, dtype=x.dtype) @ x, x, classify=True)
    assert cls.constant._nnz() == 0


def test_seeded_generator_inside_is_constant():
    def f(x):
        g = torch.Generator().manual_seed(1)
        return torch.randn(2, 3, generator=g, dtype=x.dtype) @ x
    check(f, points((3,)), constant="all")


def test_inplace_writes_into_a_buffer():
    const, var = _buffer_expected()
    check(_buffer, points((5,)), constant=const, variable=var)


def test_foreach_inplace_into_buffers():
    def f(x):
        bufs = [torch.zeros(4, dtype=x.dtype), torch.zeros(4, dtype=x.dtype)]
        torch._foreach_add_(bufs, [x, x * x])
        torch._foreach_mul_(bufs, 3.0)
        return torch.cat(bufs)
    eye = torch.eye(4, dtype=torch.bool)
    zero = torch.zeros(4, 4, dtype=torch.bool)
    check(f, points((4,)), constant=[torch.cat([eye, zero])], variable=[torch.cat([zero, eye])])


def test_write_through_transposed_view():
    const = torch.zeros(6, 6, dtype=torch.bool)
    const[[0, 2, 4], [0, 1, 2]] = True
    var = torch.zeros(6, 6, dtype=torch.bool)
    var[[1, 3, 5], [3, 4, 5]] = True
    check(_transposed_write, points((6,)), constant=[const], variable=[var])


def test_brusselator_stencil_constant_reaction_variable():
    N = 4
    n = 2 * N * N
    make = lambda s: (brusselator_point(N, seed=s),)  # noqa: E731
    same_cell = torch.eye(n, dtype=torch.bool) | torch.eye(n, dtype=torch.bool).roll(N * N, 1)
    full = as_dense(brusselator_pattern(N))
    check(brusselator, make, constant=[full & ~same_cell], variable=[same_cell])


def test_brusselator_variable_part_needs_two_colors():
    x = brusselator_point(32)
    cls = trackjac.jacobian_sparsity(brusselator, x, classify=True)
    assert color_columns(cls.variable).num_colors == 2
    assert color_rows(cls.variable).num_colors == 2
    assert color_columns(trackjac.jacobian_sparsity(brusselator, x)).num_colors > 2


def test_tuple_outputs_nest_like_the_pattern():
    f = lambda x, y: (x * 2, x * y)  # noqa: E731
    args = (torch.randn(3, dtype=torch.double), torch.randn(3, dtype=torch.double))
    cls = trackjac.jacobian_sparsity(f, *args, classify=True, layout=torch.strided)
    eye = torch.eye(3, dtype=torch.bool)
    assert torch.equal(cls.constant[0][0], eye) and not cls.variable[0][0].any()
    assert not cls.constant[0][1].any() and not cls.constant[1][0].any()
    assert torch.equal(cls.variable[1][0], eye) and torch.equal(cls.variable[1][1], eye)


def test_local_refused():
    with pytest.raises(ValueError, match="classify"):
        trackjac.jacobian_sparsity(torch.sin, torch.randn(3), classify=True, local=True)


@pytest.mark.filterwarnings("ignore::trackjac.ControlFlowWarning")
@pytest.mark.parametrize("read", ["item", "tolist", "random_item"])
def test_number_read_from_a_varying_value_makes_everything_variable(read):
    def f(x):
        if read == "item":
            s = x[0].item()
        elif read == "tolist":
            s = x.tolist()[0]
        else:
            s = torch.rand((), dtype=x.dtype).item()   # another draw at every call
        return x * s + 2 * x
    x = torch.randn(3, dtype=torch.double)
    cls = trackjac.jacobian_sparsity(f, x, classify=True)
    assert cls.constant._nnz() == 0 and cls.variable._nnz() == 3


@pytest.mark.filterwarnings("ignore::trackjac.ControlFlowWarning")
def test_branch_on_a_tracked_bool_keeps_the_split_on_its_path():
    def f(x):
        return 2 * x if x.sum() > -100 else x * x
    check(f, points((3,)), constant="all")


def test_part_writes_into_complex_storage():
    # a real view of complex storage: a storage row is one complex element, written part by part
    def f(x):
        z = torch.zeros(3, dtype=torch.complex128)
        r = torch.view_as_real(z)
        r[:, 0] = 2 * x[:3]
        r[:, 1] = x[3:] ** 2
        return torch.view_as_real(z * (1 + 1j)).reshape(-1)
    parts = check(f, points((6,)), tight=False)
    c, v = parts[0]
    assert c[:, :3].any() and not c[:, 3:].any() and v[:, 3:].any()


# -- every OpInfo op ------------------------------------------------------------------------------

def _opinfo_cases(max_samples=2, max_numel=200):
    """``(name, f, x)`` for up to ``max_samples`` samples of every float64 autograd op of
    ``op_db`` with a small, dense (own storage) first tensor: ``f`` is the op on ``x``, its
    other arguments fixed, floating outputs flattened and concatenated; random ops reseeded."""
    from torch.testing._internal.common_methods_invocations import op_db  # noqa: I001  (slow import, one test)
    from torch.utils._pytree import tree_flatten  # noqa: I001  (with op_db)
    for op in op_db:
        if not op.supports_autograd or torch.float64 not in op.supported_dtypes("cpu"):
            continue
        try:
            samples = list(op.sample_inputs("cpu", torch.float64, requires_grad=False))[:max_samples]
        except Exception:   # a sample generator that needs another device or library
            continue
        for si in samples:
            x = si.input
            if not (isinstance(x, torch.Tensor) and x.dtype == torch.float64 and x.layout == torch.strided
                    and 0 < x.numel() <= max_numel and x.is_contiguous() and x.storage_offset() == 0
                    and x.untyped_storage().nbytes() == x.numel() * x.element_size()):
                continue   # a view into a larger storage: as_strided would read other elements

            def f(x, op=op, si=si):
                with torch.random.fork_rng():
                    torch.manual_seed(1)
                    out = op(x, *si.args, **si.kwargs)
                outs = [o.reshape(-1) for o in tree_flatten(out)[0]
                        if isinstance(o, torch.Tensor) and o.is_floating_point()]
                return torch.cat(outs) if outs else x.new_zeros(0)
            yield f"{op.name}.{op.variant_test_name}", f, x


@pytest.mark.filterwarnings("ignore")
def test_opinfo_constant_entries_keep_their_value():
    """Constant entries of every op keep their autograd value at points far from the sample."""
    g = torch.Generator().manual_seed(0)
    bad, ops, entries = [], set(), 0
    for name, f, x in _opinfo_cases():
        try:
            y = f(x)
            if not 0 < y.numel() <= 300:
                continue
            c = trackjac.jacobian_sparsity(f, x, classify=True, layout=torch.strided).constant
        except Exception:   # errors and unsupported ops are test_opinfo's business
            continue
        if not c.any():
            continue
        pts = [x] + [x + 0.3 * (1 + x.abs()) * torch.randn(x.shape, generator=g, dtype=x.dtype) for _ in range(3)]
        try:
            J = torch.stack([dense_jacobian(f, p) for p in pts])
        except Exception:   # autograd cannot differentiate it here (an op's other arguments are sparse ...)
            continue
        if not (_spread(J)[c] < 1e-9).all():
            bad.append(name)
        ops.add(name)
        entries += int(c.sum())
    assert not bad, f"constant entries that change value: {bad}"
    assert len(ops) > 150 and entries > 5000   # the sweep saw linear ops, not only nonlinear ones
