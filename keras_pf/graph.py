"""Walking a functional Keras model's graph: the layers nested in it, the layer before
a layer. Shared by the transforms (`inference`), transfer learning, fine-tuning and the
benchmark's op profile."""

import keras


def is_functional(model):
    """Whether `model` is a functional Keras model (not Sequential, not subclassed)."""
    return (isinstance(model, keras.Model) and hasattr(model, "_run_through_graph")
            and not isinstance(model, keras.Sequential))


def nested_layers(model, descend=None):
    """The layers of `model` and of the models nested in it (e.g. the backbone of a
    fine-tuned model), depth first; `descend(layer)` chooses which nested models to
    enter (default: every `keras.Model`)."""
    for layer in model.layers:
        yield layer
        if descend(layer) if descend else isinstance(layer, keras.Model):
            yield from nested_layers(layer, descend)


def producer(layer):
    """The layer (operation) whose output is `layer`'s first input, in the graph of the
    functional model `layer` belongs to."""
    return layer._inbound_nodes[0].input_tensors[0]._keras_history.operation
