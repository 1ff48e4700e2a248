"""Experiments: studies that train and compare models on top of the library (the top layer below the CLI).

* :mod:`.genseg_benchmark`, :mod:`.genseg_report`: GenSeg against four baselines on paired draws (``medgen genseg benchmark``);
* :mod:`.augmentation`: does generative augmentation help a downstream classifier (``medgen augment experiment``);
* :mod:`.lab`: the latent-space lab around the class-conditional autoencoder (``medgen lab``).

They may import any library layer and ``medgen_core.bundles``; nothing in the library imports them.
"""
