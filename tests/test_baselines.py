"""Classical baselines (resnet18, backbone-head) and the HQCNN capacity options."""

from __future__ import annotations

import pytest
import torch

from qhqcnn.config import ModelSpec
from qhqcnn.errors import ConfigError
from qhqcnn.models import build_model, get_model, model_names, parameter_counts


@pytest.mark.parametrize(
    ("name", "channels", "classes"), [("resnet18", 3, 8), ("backbone-head", 1, 2)]
)
def test_baselines_build_and_run(name, channels, classes):
    assert name in model_names()
    entry = get_model(name)  # registered: classical, no twin, no circuit
    assert not entry.quantum and entry.twin is None and entry.template is None
    spec = ModelSpec(model=name)
    assert not spec.is_quantum
    net = build_model(spec, channels, classes)
    assert net(torch.randn(2, channels, 28, 28)).shape == (2, classes)
    counts = parameter_counts(net)
    assert counts["quantum"] == 0 and counts["head"] == 0


def test_resnet18_is_the_28x28_variant():
    net = build_model(ModelSpec(model="resnet18"), 3, 8)
    stem = net.stem[0]
    assert stem.kernel_size == (3, 3) and stem.stride == (1, 1)
    assert not any(isinstance(m, torch.nn.MaxPool2d) for m in net.modules())
    # torchvision's resnet18 has 11,689,512 parameters: minus its 1000-class fc (513,000), minus
    # the 7×7 stem's extra 7,680 weights over a 3×3 one, plus an 8-class fc (4,104)
    assert parameter_counts(net)["total"] == 11_689_512 - 513_000 - 7_680 + 4_104


def test_backbone_head_has_no_bottleneck():
    plain = build_model(ModelSpec(model="backbone-head"), 1, 2)
    twin = build_model(ModelSpec(model="classical"), 1, 2)
    assert plain.classifier[0].in_features == 256  # FC 256 straight into the classifier
    assert twin.classifier[0].in_features == 8  # the 4-qubit bottleneck's 8 outputs
    assert torch.equal(
        torch.tensor(plain.backbone.fc[1].weight.shape),
        torch.tensor(twin.backbone.fc[1].weight.shape),
    )


def test_zz_correlator_observables():
    spec = ModelSpec(model="hqcnn", num_qubits=4, observables="zx+zz")
    template = spec.template()
    assert template.num_outputs == 12 and template.num_weights == 38
    assert template.output_names[-4:] == ("Z0Z1", "Z1Z2", "Z2Z3", "Z3Z0")
    twin = build_model(ModelSpec(model="classical", observables="zx+zz"), 1, 3)
    assert twin.head.linear.out_features == 12
    with pytest.raises(ConfigError, match="observables"):
        ModelSpec(observables="zz")
