"""Optional integrations with other libraries; each submodule imports its library only when used.

* :mod:`losskit.integrations.transformers`: Hugging Face ``*ForCausalLM`` models train with the
  fused linear+cross-entropy (``pip install losskit[transformers]``).
"""
