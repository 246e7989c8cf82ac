"""The lectures' autoencoder experiments, each one short run that writes a figure and a JSON of numbers.

    latentdiff lab ae-vs-pca       # a 784-1000-500-250-2 autoencoder vs PCA: 2-D maps, MSE, k-NN
    latentdiff lab conv-vs-dense   # convolutional vs dense autoencoders at equal code size
    latentdiff lab denoising-ae    # denoising autoencoders, Gaussian and masking noise, PSNR per level

Each lesson file reads top to bottom like a notebook: data (data.py), models and their training
loop (models.py), PCA (pca.py), measures (metrics.py), figures (plots.py, over latentdiff/figures.py).
"""
