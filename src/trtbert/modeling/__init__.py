"""What export and train share on the PyTorch side: where a model comes from (``source``), each
family's layout (``specs``), and the exit heads (``heads``) with their checkpoint format
(``checkpoint``, torch-free).

Everything here but ``checkpoint`` needs torch and transformers (``pip install 'trtbert[export]'``).
"""
