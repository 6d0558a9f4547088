"""`OpenAIServingModels`: the model names this server answers to, and GET /v1/models."""

from __future__ import annotations

from vllm_hydra.config.vllm import VllmConfig
from vllm_hydra.entrypoints.openai.errors import NotFoundError
from vllm_hydra.entrypoints.openai.protocol import ModelCard, ModelList


class OpenAIServingModels:
    def __init__(self, vllm_config: VllmConfig) -> None:
        self.served_model_name = vllm_config.served_model_name
        self.model_path = str(vllm_config.model.path)
        self.max_model_len = vllm_config.model.max_model_len

    def check_model(self, model: str | None) -> None:
        """Raise a 404 for a model this server does not serve; None means the served one."""
        if model is not None and model != self.served_model_name:
            raise NotFoundError(
                f"The model `{model}` does not exist.", param="model", code="model_not_found"
            )

    def show_available_models(self) -> ModelList:
        card = ModelCard(
            id=self.served_model_name, root=self.model_path, max_model_len=self.max_model_len
        )
        return ModelList(data=[card])
