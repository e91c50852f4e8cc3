"""pet: hierarchical P-E-T language-model orchestration.

P (personal) runs on the device with onnxruntime; E (expert, one LoRA adapter per domain) and T
(traditional, the general model) run in the cloud as a Ray Serve graph; a router escalates P -> E -> T.
Start with ``pet --help``.
"""

__version__ = "0.1.0"
