"""The 20 VOC foreground classes (label id = index + 1; 0 background, 255 ignore)."""
CAT_LIST = ["aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow",
            "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa",
            "train", "tvmonitor"]
N_CLASSES = len(CAT_LIST)
CLASS_NAMES = ["background"] + CAT_LIST
IGNORE = 255
