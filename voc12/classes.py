"""The 20 PASCAL VOC foreground classes (label id = index + 1; 0 background, 255 ignore):
the class list of a VOC root that has no classes.txt of its own."""
VOC_CLASSES = ("aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair",
               "cow", "diningtable", "dog", "horse", "motorbike", "person", "pottedplant",
               "sheep", "sofa", "train", "tvmonitor")
