"""The rule registry: one rule per overload packet, results padded, rules skipped without provenance.

Tests that register rules do it into empty ``RULES``/``KIND`` dicts (pytest's ``monkeypatch``),
so the real registry is never touched.  Self-contained: no shared test helpers.
"""
import pytest
import torch

import trackjac.rules  # noqa: F401  (imports every rule module: the real registry is filled)
from trackjac.rules import registry
from trackjac.rules.api import Call

aten = torch.ops.aten

RULE_MODULES = ("pointwise", "reductions", "movement", "indexing", "foreach", "spectral")


@pytest.fixture
def fresh(monkeypatch):
    """An empty registry for the duration of one test."""
    monkeypatch.setattr(registry, "RULES", {})
    monkeypatch.setattr(registry, "KIND", {})
    monkeypatch.setattr(registry, "TAG_RULES", {})
    return registry


def _call(n_outs=3, has_prov=True):
    outs = [torch.zeros(2) for _ in range(n_outs)]
    return Call(aten.add.Tensor, (), {}, {}, outs, local=False, derived=True, pre={}, has_prov=has_prov)


def test_duplicate_registration_is_refused(fresh):
    def first(call):
        return None

    def second(call):
        return None

    fresh.register([aten.add], first)
    with pytest.raises(ValueError, match="already registered"):
        fresh.register([aten.add], second)
    with pytest.raises(ValueError):
        fresh.rule(aten.add)(second)
    assert fresh.RULES[aten.add].__wrapped__ is first


def test_duplicate_tag_rule_is_refused(fresh):
    fresh.tag_rule(torch.Tag.pointwise)(lambda call: None)
    with pytest.raises(ValueError):
        fresh.tag_rule(torch.Tag.pointwise)(lambda call: None)


def test_rules_are_registered_per_packet(fresh):
    with pytest.raises(TypeError):
        fresh.register([aten.add.Tensor], lambda call: None)


def test_decorator_returns_the_function_and_labels_its_module(fresh):
    def my_rule(call):
        return None

    assert fresh.rule(aten.add, aten.sub)(my_rule) is my_rule
    assert fresh.KIND[aten.add] == fresh.KIND[aten.sub] == "table:test_registry"
    fresh.register([aten.mul], my_rule, kind="table:elsewhere")
    assert fresh.KIND[aten.mul] == "table:elsewhere"


@pytest.mark.parametrize("result, expected", [
    ("A", ["A", None, None]),                 # a single provenance: the first output's
    (None, [None, None, None]),               # no dependencies
    (["A"], ["A", None, None]),               # a short list is padded
    (("A", "B"), ["A", "B", None]),
    (["A", "B", "C"], ["A", "B", "C"]),       # a full list is kept
])
def test_results_are_padded_to_the_outputs(fresh, result, expected):
    def returns(call):
        return result

    fresh.register([aten.add], returns)
    assert list(fresh.RULES[aten.add](_call(3))) == expected


@pytest.mark.parametrize("always", [False, True])
def test_rule_is_skipped_without_provenance_unless_always(fresh, always):
    ran = []

    def marks_constant(call):
        ran.append(call)
        call.derived = False
        return "A"

    fresh.register([aten.add], marks_constant, always=always)
    call = _call(2, has_prov=False)
    res = list(fresh.RULES[aten.add](call))
    if always:
        assert ran == [call] and res == ["A", None] and call.derived is False
    else:
        assert ran == [] and res == [None, None] and call.derived is True
    ran.clear()
    call = _call(2, has_prov=True)           # with provenance the rule always runs
    assert list(fresh.RULES[aten.add](call)) == ["A", None] and ran == [call]


def test_every_registered_packet_has_a_kind():
    assert registry.RULES
    assert set(registry.RULES) == set(registry.KIND)
    for packet, kind in registry.KIND.items():
        assert isinstance(packet, torch._ops.OpOverloadPacket)
        assert kind.startswith("table:"), (packet, kind)


def test_rule_modules_register_with_decorators():
    import importlib

    for name in RULE_MODULES:
        mod = importlib.import_module(f"trackjac.rules.{name}")
        assert not hasattr(mod, "TABLE"), name
        assert f"table:{name}" in registry.KIND.values(), name


@pytest.mark.parametrize("op, kind", [
    (aten.mul.Tensor, "table:pointwise"),
    (aten.mul_.Tensor, "table:pointwise"),      # in-place: its functional packet's rule
    (aten.sin.default, "pointwise tag"),        # no entry: the tag rule
    (aten.index_select.default, "table:indexing"),   # movement's rule, registered by indexing
    (aten.complex.default, "table:spectral"),   # pointwise.generic, registered by spectral
    (aten.max.other, "table:reductions"),
    (aten._foreach_add.List, "table:foreach"),
])
def test_kind_labels(op, kind):
    assert registry.find_with_kind(op)[1] == kind


@pytest.mark.parametrize("op, bound", [
    (aten.zeros_like.default, {}),
    (aten.fill.Scalar, {"value": 1.0}),
    (aten.zero.default, {}),
    (aten.new_zeros.default, {}),
    (aten.normal.Tensor_float, {}),
    (aten._foreach_zero.default, {"self": [torch.zeros(2)]}),   # derived comes from zero's rule
])
def test_fresh_constants_are_marked_without_provenance(op, bound):
    """Rules that set ``call.derived = False`` run (``always``) when no input carries provenance."""
    call = _call(1, has_prov=False)
    call.func, call.bound = op, bound
    assert list(registry.find(op)(call)) == [None]
    assert call.derived is False


def test_sparse_results_of_constants_are_constants():
    """The sparse rule runs (``always``) without provenance: a sparse tensor of constants is a
    constant (a sparse operator built inside ``f``); one of tracked values is refused (see
    tests/test_exactness_sparse_operands.py)."""
    call = _call(1, has_prov=False)
    call.func = aten.to_sparse.default
    assert list(registry.find(aten.to_sparse.default)(call)) == [None]
    assert call.derived is False


def test_other_rules_are_skipped_without_provenance():
    """``mul``'s rule would read ``call.bound``; without provenance it is not run at all."""
    call = _call(2, has_prov=False)
    call.func = aten.mul.Tensor
    assert list(registry.find(aten.mul.Tensor)(call)) == [None, None]
    assert call.derived is True
