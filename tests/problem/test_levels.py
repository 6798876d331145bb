import pytest

from ctrlsparse.problem.levels import MODEL, parse_levels

LAYERS = ["conv1", "layer1.0.conv1", "layer1.0.conv2", "layer2.0.conv1", "fc"]


def test_patterns_give_every_matching_layer_its_own_target():
    levels = parse_levels({"layer1.*": 0.5, "layer2.*": 0.3}, LAYERS, "target_density")
    assert levels == {"layer1.0.conv1": 0.5, "layer1.0.conv2": 0.5, "layer2.0.conv1": 0.3}


def test_a_layer_named_outright_wins_over_a_pattern():
    levels = parse_levels({"layer1.*": 0.5, "layer1.0.conv2": 0.9, MODEL: 0.4}, LAYERS, "target_density")
    assert levels == {"layer1.0.conv1": 0.5, "layer1.0.conv2": 0.9, MODEL: 0.4}


@pytest.mark.parametrize(
    "value, message",
    [
        ({"layer9.*": 0.5}, "pattern 'layer9.*' matches no layer; valid names: conv1, layer1.0.conv1"),
        ({"layer9": 0.5}, "unknown layer name 'layer9'; valid names: model, conv1"),
        ([0.5, 0.5], "one value per gated layer"),
    ],
)
def test_bad_levels_name_the_value_and_the_choices(value, message):
    with pytest.raises(ValueError, match=message.replace(".", r"\.").replace("*", r"\*")):
        parse_levels(value, LAYERS, "target_density")
