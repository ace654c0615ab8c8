"""The dense CRF (pydensecrf2) used to clean labels, with IRN's settings (docs/FIDELITY.md)."""
import numpy as np

from misc.metrics import IGNORE, cam_argmax


def crf_labels(img, labels, n_labels, iters=10, gt_prob=0.7):
    """Refine an HxW map of label indices in [0, n_labels) on an HxWx3 uint8 image:
    unary from the labels (confidence gt_prob), Gaussian (sxy 3, compat 3) and bilateral
    (sxy 50, srgb 5, compat 10) pairwise terms. Returns HxW label indices."""
    import pydensecrf.densecrf as dcrf  # compiled extension: imported where it is used
    from pydensecrf.utils import unary_from_labels
    h, w = labels.shape
    d = dcrf.DenseCRF2D(w, h, n_labels)
    d.setUnaryEnergy(unary_from_labels(labels, n_labels, gt_prob=gt_prob, zero_unsure=False))
    d.addPairwiseGaussian(sxy=3, compat=3)
    d.addPairwiseBilateral(sxy=50, srgb=5, rgbim=np.array(img, np.uint8, order="C"), compat=10)
    q = np.array(d.inference(iters)).reshape(n_labels, h, w)
    return q.argmax(0)


def confident_labels(img, maps, keys, fg_thres, bg_thres):
    """IRN's training labels from CAMs (K,H,W) of classes `keys` (0-based): the CRF-smoothed
    argmax with a background score of fg_thres (foreground-confident) and of bg_thres
    (background-confident). Confident class where the first says foreground, 0 where
    both say background, 255 elsewhere. Returns HxW uint8 label ids."""
    ids = np.concatenate([[0], np.asarray(keys, np.int64) + 1])
    if len(ids) == 1:  # an image without labels: confidently all background, no CRF of 1 label
        return np.zeros(np.shape(maps)[1:], np.uint8)

    def crf_at(thres):
        return ids[crf_labels(img, cam_argmax(maps, thres), len(ids))]
    fg, bg = crf_at(fg_thres), crf_at(bg_thres)
    out = fg.astype(np.uint8)
    out[fg == 0] = IGNORE
    out[(fg == 0) & (bg == 0)] = 0
    return out


def crf_probs(img, probs, iters=10):
    """Dense-CRF refinement of class probabilities (C,H,W) with the same pairwise terms;
    returns HxW class indices (DeepLab's post-processing)."""
    import pydensecrf.densecrf as dcrf
    from pydensecrf.utils import unary_from_softmax
    c, h, w = probs.shape
    d = dcrf.DenseCRF2D(w, h, c)
    d.setUnaryEnergy(np.ascontiguousarray(unary_from_softmax(np.clip(probs, 1e-8, 1))))
    d.addPairwiseGaussian(sxy=3, compat=3)
    d.addPairwiseBilateral(sxy=50, srgb=5, rgbim=np.array(img, np.uint8, order="C"), compat=10)
    return np.array(d.inference(iters)).reshape(c, h, w).argmax(0)
