"""`trtd export kserve`: a minimal KServe InferenceService for the exported Triton repository.

KServe's current form (v1beta1, the "model" predictor; the older `spec.predictor.triton` is
its deprecated predecessor): the predictor names the model format `triton`, the serving runtime
(`kserve-tritonserver`, KServe's ClusterServingRuntime for Triton, unless --runtime names
another), the Open Inference Protocol (`protocolVersion: v2`) and the repository's storage URI;
KServe downloads the repository to /mnt/models and starts tritonserver on it. Models on a GPU
ask for as many GPUs as their highest index needs (Triton's `gpus: [1]` needs two in the pod).

Written without a YAML library: every value is a mapping key the code chooses, a number, or a
JSON string literal (which YAML reads as a double-quoted string), so the text is valid YAML by
construction; the tests read it back with PyYAML.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass

DEFAULT_RUNTIME = "kserve-tritonserver"
# Kubernetes object names of an InferenceService: a DNS-1035 label (KServe's webhook enforces it).
_DNS_1035 = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")
_URI = re.compile(r"^[a-z][a-z0-9+.-]*://\S+$")


class ManifestError(ValueError):
    pass


@dataclass(frozen=True)
class InferenceService:
    name: str
    storage_uri: str
    runtime: str = DEFAULT_RUNTIME
    gpus: int = 0  # nvidia.com/gpu the predictor asks for

    def check(self) -> None:
        if len(self.name) > 63 or not _DNS_1035.match(self.name):
            raise ManifestError(f"--name {self.name!r}: an InferenceService name is a DNS-1035 label: lower-case "
                                f"letters, digits and '-', starting with a letter, at most 63 characters "
                                f"(e.g. {suggest_name(self.name)!r})")
        if not _URI.match(self.storage_uri):
            raise ManifestError(f"--storage-uri {self.storage_uri!r}: give the URI where the repository will "
                                f"be uploaded, e.g. s3://bucket/models, gs://bucket/models, pvc://claim/models")
        if not _DNS_1035.match(self.runtime):
            raise ManifestError(f"--runtime {self.runtime!r}: the name of a (Cluster)ServingRuntime, such as "
                                f"{DEFAULT_RUNTIME}")

    def yaml(self) -> str:
        self.check()
        lines = [
            "# Written by `trtd export kserve`: KServe serves the Triton repository at storageUri",
            "# with Triton (Open Inference Protocol v2 over HTTP and gRPC).",
            "apiVersion: serving.kserve.io/v1beta1",
            "kind: InferenceService",
            "metadata:",
            f"  name: {json.dumps(self.name)}",
            "spec:",
            "  predictor:",
            "    model:",
            "      modelFormat:",
            "        name: triton",
            f"      runtime: {json.dumps(self.runtime)}",
            "      protocolVersion: v2",
            f"      storageUri: {json.dumps(self.storage_uri)}",
        ]
        if self.gpus:
            lines += ["      resources:", "        limits:", f"          nvidia.com/gpu: {self.gpus}"]
        return "\n".join(lines) + "\n"


def suggest_name(text: str) -> str:
    """A DNS-1035 label made from `text` (a folder name, say)."""
    name = re.sub(r"[^a-z0-9-]+", "-", text.lower()).strip("-")
    name = name if name and name[0].isalpha() else f"trtd-{name}".rstrip("-")
    return name[:63].rstrip("-") or "trtd-models"
