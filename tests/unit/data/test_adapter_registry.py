"""The dataset-adapter registry: every adapter is registered with a name, aliases and a docstring;
an adapter registered in one decorator is found by get_adapter and prepares a dataset."""
from __future__ import annotations

import pandas as pd
import pytest

from fairtune_ray.data.adapters import (ADAPTERS, ALIASES, Adapter, AdapterContext, AdapterResult, adapter_names,
                                        get_adapter, register_adapter, unregister_adapter)
from fairtune_ray.data.manifest import DataError
from fairtune_ray.data.prepare import prepare_dataset
import fixtures_data as fx


@pytest.mark.parametrize("name", list(ADAPTERS))
def test_every_registered_adapter_resolves(name):
    cls = ADAPTERS[name]
    assert cls.name == name and issubclass(cls, Adapter)
    assert (cls.__doc__ or "").strip() and cls.describe()
    assert type(get_adapter(name)) is cls and type(get_adapter(f"  {name.upper()} ")) is cls
    for alias in [a for a, target in ALIASES.items() if target == name]:
        assert type(get_adapter(alias)) is cls


def test_registration_order_and_aliases_are_kept():
    assert adapter_names() == ["ham10000", "fitzpatrick17k", "papila", "chexpert", "mimic-cxr", "ol3i",
                               "harvard-gf", "oasis-1", "generic"]
    assert {a: ALIASES[a] for a in ("ham", "cxp", "mimic_cxr", "harvard-gf3300", "oasis_1", "csv")} == {
        "ham": "ham10000", "cxp": "chexpert", "mimic_cxr": "mimic-cxr", "harvard-gf3300": "harvard-gf",
        "oasis_1": "oasis-1", "csv": "generic"}
    with pytest.raises(DataError, match=r"unknown dataset 'Nope'; known: ham10000, fitzpatrick17k, .*, generic$"):
        get_adapter("Nope")


@pytest.mark.filterwarnings("ignore:split:UserWarning")  # tiny groups lacking a class
def test_toy_adapter_registered_in_one_decorator(tmp_path):
    ham = fx.build_ham10000(tmp_path / "raw")

    @register_adapter("toy-ham", aliases=("toy",))
    class ToyAdapter(Adapter):
        """HAM10000's images with a made-up label (row parity) and one constant attribute."""

        attributes = {"site": {0: "one"}}
        default_attributes = ("site",)

        def load(self, ctx: AdapterContext) -> AdapterResult:
            images = sorted(p for p in ctx.root.rglob("*.jpg"))
            table = pd.DataFrame({"image": [ctx.rel(p) for p in images], "label": [i % 2 for i in range(len(images))],
                                  "patient_id": [p.stem for p in images], "site": 0.0})
            return AdapterResult(table=table, attributes=dict(self.attributes), label_names=self.label_names)

    try:
        assert ToyAdapter.name == "toy-ham" and adapter_names()[-1] == "toy-ham"
        assert type(get_adapter("TOY")) is ToyAdapter
        res = prepare_dataset("toy", ham.root, str(tmp_path / "out"), size=16, progress=False, min_group_size=0)
        assert len(res.manifest) == len(list(ham.root.rglob("*.jpg"))) and set(res.manifest["label"]) == {0, 1}
        with pytest.raises(ValueError, match="already registered"):
            register_adapter("other", aliases=("toy",))(ToyAdapter)
    finally:
        unregister_adapter("toy-ham")
    assert "toy-ham" not in ADAPTERS and "toy" not in ALIASES
    with pytest.raises(DataError, match="unknown dataset 'toy'"):
        get_adapter("toy")


def test_declared_name_must_match_the_registered_one():
    class Named(Adapter):
        """A class that names itself."""

        name = "one"

    with pytest.raises(ValueError, match="registered as 'two'"):
        register_adapter("two")(Named)
    assert "two" not in ADAPTERS
