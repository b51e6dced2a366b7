"""paddle-models: readable PaddlePaddle reproductions (multimodal ERNIE-M + ResNet classifier,
a Transformer from the paper's parts, a recommender zoo) with one engine for train/eval/export."""
from setuptools import find_packages, setup

# Exact pins of the direct dependencies. The full, transitive lock (what `make` installs with
# `-c requirements-lock.txt`) is requirements-lock.txt. paddlenlp 2.8.1 breaks with the newest
# huggingface_hub / aistudio-sdk / datasets / pyarrow / fsspec: the pins below are the ones that import.
INSTALL_REQUIRES = [
    "paddlepaddle==3.3.1",
    "paddlenlp==2.8.1",
    "safetensors==0.8.0",
    "huggingface_hub==0.25.2",
    "aistudio-sdk==0.2.6",
    "datasets==3.1.0",
    "pyarrow==18.1.0",
    "fsspec==2024.9.0",
    "numpy==1.26.4",
    "PyYAML==6.0.4",
    "tqdm==4.70.1",
    "sentencepiece==0.2.3",
    "pillow==13.0.0",
    "matplotlib==3.11.2",
    "sacrebleu==2.6.0",
    "sacremoses==0.2.0",  # Moses punctuation normalizer + tokenizer behind bleu_tokenized (transformer/bleu.py)
    "paddle2onnx==2.1.0",
    "onnx==1.17.0",
    "onnxruntime==1.32.0",
    "ml-dtypes==0.5.4",   # onnxruntime.quantization imports it (tools/export.py --quantize int8)
    "fastapi==0.165.0",
    "uvicorn==0.54.0",
    "httptools==0.9.0",   # uvicorn's C HTTP parser (h11, pure Python, is slower per request)
    "uvloop==0.23.0",     # uvicorn's libuv event loop
    "prometheus_client==0.26.0",
]

setup(
    name="paddle-models",
    version="0.1.0",
    description="PaddlePaddle reproductions: multimodal classifier, Transformer, recommender zoo",
    packages=find_packages(include=["paddle_models", "paddle_models.*"]),
    package_data={"paddle_models": ["defaults/*.yaml", "multimodal/fixtures/*.txt"]},
    python_requires=">=3.10,<3.13",
    install_requires=INSTALL_REQUIRES,
    # one program with the tools as subcommands (paddle_models/commands): paddle-models infer --model-dir ...
    entry_points={"console_scripts": ["paddle-models = paddle_models.commands:main"]},
    extras_require={"test": ["pytest==9.2.0", "scikit-learn==1.9.1", "scipy==1.17.1", "ruff==0.17.6",
                             "hypothesis==6.170.17", "schemathesis==4.32.5"]},
)
