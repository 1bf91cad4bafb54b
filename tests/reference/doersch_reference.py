"""The peers of discriminative mining (Doersch et al.), as the ECCV 2024 authors' reimplementation
calls them: scikit-image's HOG and rgb2lab over 64 x 64 windows at a stride of 8 pixels, and
scikit-learn's SVC(kernel='linear', C=0.1).

    doersch_reference.py features IMAGE.png... OUT_DIR
        per image n: hog_<n>.npy (windows x 1984, skimage.feature.hog blocks), colour_<n>.npy
        (windows x 128, rgb2lab's a and b of each window resized to 8 x 8 bilinearly, (v + 128) / 255),
        features_<n>.npy (the two L2-normalised) and low_contrast_<n>.npy (is_low_contrast of each
        window, fraction_threshold 0.15); windows row-major.
    doersch_reference.py svm DIR
        reads DIR/x.npy (n x d), DIR/y.npy (+1 / -1) and DIR/test.npy, fits
        SVC(kernel='linear', C=0.1, tol=1e-8), writes DIR/decision.npy (decision values of test.npy),
        DIR/coef.npy and DIR/intercept.npy.
"""
import sys
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from skimage.color import rgb2lab
from skimage.exposure import is_low_contrast
from skimage.feature import hog
from skimage.io import imread
from sklearn.svm import SVC


def window_features(image):
    blocks = hog(image, orientations=31, pixels_per_cell=(8, 8), cells_per_block=(8, 8), channel_axis=-1, feature_vector=False)
    rows, cols = blocks.shape[:2]
    hog_part = blocks.reshape(rows * cols, 8 * 8 * 31)
    lab = torch.from_numpy(rgb2lab(image)).permute(2, 0, 1).unsqueeze(1)[1:3]
    windows = F.unfold(lab, kernel_size=(64, 64), stride=(8, 8))
    k = windows.shape[-1]
    windows = windows.permute(2, 0, 1).reshape(k, 2, 64, 64)
    colour = ((F.interpolate(windows, size=(8, 8), mode="bilinear", align_corners=False).reshape(k, 128) + 128.0) / 255.0).numpy()
    both = np.concatenate([hog_part, colour], axis=-1)
    features = both / np.linalg.norm(both, axis=-1, keepdims=True)
    low = np.array([is_low_contrast(image[8 * r : 8 * r + 64, 8 * c : 8 * c + 64], fraction_threshold=0.15) for r in range(rows) for c in range(cols)])
    return hog_part, colour, features, low


def features(paths, out):
    for n, path in enumerate(paths):
        image = imread(path)[..., :3]
        hog_part, colour, feats, low = window_features(image)
        np.save(out / f"hog_{n}.npy", hog_part)
        np.save(out / f"colour_{n}.npy", colour)
        np.save(out / f"features_{n}.npy", feats)
        np.save(out / f"low_contrast_{n}.npy", low.astype(np.uint8))


def svm(folder):
    x, y, test = (np.load(folder / f"{name}.npy").astype(np.float64) for name in ("x", "y", "test"))
    model = SVC(kernel="linear", C=0.1, tol=1e-8).fit(x, y)
    np.save(folder / "decision.npy", model.decision_function(test))
    np.save(folder / "coef.npy", model.coef_[0])
    np.save(folder / "intercept.npy", model.intercept_)


if __name__ == "__main__":
    mode = sys.argv[1]
    if mode == "features":
        features(sys.argv[2:-1], Path(sys.argv[-1]))
    elif mode == "svm":
        svm(Path(sys.argv[2]))
    else:
        sys.exit(f"unknown mode {mode}")
