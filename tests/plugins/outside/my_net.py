"""A lab's method plugin exactly as the README's "Writing a method plugin" showed it before the platform was
split into stage folders (commit 4a8f956): tests/test_outside_plugin.py runs it unchanged, from a
``--plugins`` folder and installed under the ``segarena.methods`` entry point. Do not edit it to follow the
platform: it stands for code outside this repository."""
# ruff: noqa: E702, I001 -- the README's text, verbatim

import torch
from segarena.platform.plugin import Budget, MethodPlugin, Prediction
from segarena.platform.search_space import LogUniform

class MyNet(MethodPlugin):
    name, version, paper = "my-net", "0.1.0", "Doe et al., MICCAI 2026"
    denoiser = "net"                       # the network whose forward passes count as nfe
    stochastic = False

    @classmethod
    def profiles(cls):                     # plain data; `tiny` (2-core CPU, 64 px) and `paper` required
        return {"tiny": {"lr": 1e-3, "batch_size": 4}, "paper": {"lr": 1e-4, "batch_size": 16}}

    @classmethod
    def search_space(cls):
        return {"lr": LogUniform(1e-5, 1e-2)}

    @classmethod
    def budgets(cls, profile):             # sampler × steps × ensemble; nfe = steps × ensemble
        return [Budget()]

    def __init__(self, hparams, task):     # task: in_channels, num_classes, image_size, spacing
        super().__init__(hparams, task)
        self.net = torch.nn.Conv2d(task.in_channels, task.num_classes, 3, padding=1)
        self.opt = torch.optim.Adam(self.net.parameters(), hparams["lr"])

    def modules(self):    return {"net": self.net}      # keyed by attribute name
    def optimizers(self): return {"opt": self.opt}

    def training_step(self, batch):        # {"image": (B,Cin,H,W), "mask": (B,C,H,W)}; own backward/step
        loss = torch.nn.functional.binary_cross_entropy_with_logits(self.net(batch["image"]), batch["mask"])
        self.opt.zero_grad(); loss.backward(); self.opt.step()
        return {"loss": loss.item()}

    def predict(self, images, budget, generator=None):
        probs = self.net(images).sigmoid()
        return Prediction(probs=probs, mask=probs > 0.5, nfe=budget.nfe)   # + members for ensembles
