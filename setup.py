"""Exp-CLIP: zero-shot facial expression recognition by LLM knowledge transfer (WACV 2025), Hugging Face-native."""

from pathlib import Path

from setuptools import setup

ROOT = Path(__file__).parent

setup(
    name="expclip",
    version="0.1.0",
    description="Exp-CLIP: zero-shot facial expression recognition with CLIP and LLM knowledge transfer",
    long_description=(ROOT / "README.md").read_text(encoding="utf-8"),
    long_description_content_type="text/markdown",
    license="MIT",
    python_requires=">=3.10",
    # The Hub custom-code pair (copied into every model folder, so it stays top level) and the trainer
    # (`accelerate launch -m train_expclip`); everything else is the one package `expclip`, `expclip.eval` included.
    py_modules=["configuration_expclip", "modeling_expclip", "train_expclip"],
    packages=["expclip", "expclip.eval"],
    package_data={"expclip.eval": ["metrics/*/*.py"]},  # local `evaluate` metric modules (no Hub at run time)
    install_requires=[
        "torch>=2.4",  # install your torch build first (README); any >=2.4 satisfies this
        "transformers>=5.0,<6",
        "datasets>=3.0",
        "evaluate>=0.4",
        "scikit-learn",  # evaluate's accuracy and recall metrics compute with it
        "huggingface_hub>=1.0",
        "safetensors>=0.4",
        "peft>=0.13",
        "accelerate>=1.0",
        "pillow>=10",
        "numpy",
        "scipy>=1.10",  # --track: the tracker's Hungarian assignment (linear_sum_assignment)
        "tqdm",
        "matplotlib>=3.7",  # confusion matrices and timelines as PNG
        "opencv-python-headless>=4.8,<5",  # bundled Haar face cascades and FFmpeg video decoding; 5.x dropped both
    ],
    extras_require={
        # pytest-xdist: the suite runs on every core (-n auto), which halves its time on 2 cores
        # + Debian's chromium, chromium-driver; num2words: the tiny SmolVLM teacher's processor
        "test": ["pytest>=8", "pytest-xdist>=3.5", "scikit-image>=0.22", "selenium>=4.11", "num2words"],
        # VLM teachers (README: Beyond the paper): SmolVLM's processor spells numbers with num2words; torchvision is
        # installed beside torch (README: Install).
        "vlm": ["num2words"],
        "app": ["gradio>=6,<7", "gradio_client>=2"],  # `expclip app` / app.py; gradio_client for API users
        # `expclip export --to onnx`: torch.onnx's torch.export-based exporter needs onnxscript; ONNX Runtime checks
        # the files. Not optimum / optimum-onnx: their releases require transformers<4.58.
        "onnx": ["onnx>=1.18", "onnxruntime>=1.20", "onnxscript>=0.5"],
    },
    entry_points={"console_scripts": ["expclip=expclip.cli:main"]},
    classifiers=[
        "Programming Language :: Python :: 3",
        "Topic :: Scientific/Engineering :: Artificial Intelligence",
        "Topic :: Scientific/Engineering :: Image Recognition",
    ],
)
