"""Keras 3 internals (written for Keras 3.15): walking a functional model's graph and
the TensorFlow trainer's symbolic build. Used by the transforms (`models.inference`),
transfer learning, fine-tuning, QAT's graph walk and the benchmark's op profile."""

import keras

KERAS_VERSION = "3.15"


def is_functional(model):
    """Whether `model` is a functional Keras model (not Sequential, not subclassed)."""
    return (isinstance(model, keras.Model) and hasattr(model, "_run_through_graph")
            and not isinstance(model, keras.Sequential))


def has_graph(model):
    """Whether `model` is a Keras 3 model with a graph of nodes (functional or built
    Sequential), which QAT can walk."""
    return isinstance(model, keras.Model) and hasattr(model, "_nodes_by_depth")


def nested_layers(model, descend=None):
    """The layers of `model` and of the models nested in it (e.g. the backbone of a
    fine-tuned model), depth first; `descend(layer)` chooses which nested models to
    enter (default: every `keras.Model`)."""
    for layer in model.layers:
        yield layer
        if descend(layer) if descend else isinstance(layer, keras.Model):
            yield from nested_layers(layer, descend)


def inbound_nodes(layer):
    """The graph nodes that call `layer` (one per call; a shared layer has several)."""
    return layer._inbound_nodes


def outbound_nodes(layer):
    """The graph nodes that consume `layer`'s output."""
    return layer._outbound_nodes


def input_tensors(layer):
    """The distinct input tensors of `layer`'s first call, in order."""
    return list({id(t): t for t in layer._inbound_nodes[0].input_tensors}.values())


def tensor_producer(tensor):
    """The layer (operation) that outputs the symbolic `tensor`."""
    return tensor._keras_history.operation


def producer(layer):
    """The layer (operation) whose output is `layer`'s first input, in the graph of the
    functional model `layer` belongs to."""
    return tensor_producer(layer._inbound_nodes[0].input_tensors[0])


def run_through_graph(model, inputs, operation_fn):
    """Re-run functional `model`'s graph on `inputs`, each layer replaced by
    `operation_fn(layer)` (how QAT rebuilds a model layer by layer in tf_keras)."""
    return model._run_through_graph(inputs, operation_fn=operation_fn)


def all_layers(model):
    """Every layer under `model`, recursively (inner layers of MultiHeadAttention too)."""
    return list(model._flatten_layers(include_self=False, recursive=True))


def build_from_batch(model, data_batch):
    """The TF trainer's build of `model` from one batch (shapes and dtypes only)."""
    model._symbolic_build(data_batch=data_batch)


def replace_trainer_build(model, build):
    """Make `model.fit/evaluate` call `build(iterator=None, data_batch=None)` where the
    TF trainer would call its own `_maybe_symbolic_build` (see
    `training.distributed.build_from_local_batch`)."""
    model._maybe_symbolic_build = build
