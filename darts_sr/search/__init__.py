"""Architecture search: the supernets and their relaxation, architecture gradients, the two search stages
(generator, discriminator), derivation, the race, random genotypes of the space, pictures of genotypes and
probabilities. Uses ``training`` (the run skeleton, trials) and below; never ``experiments``."""
