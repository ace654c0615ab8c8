"""PASCAL VOC 2012 data: the reader of a real VOC root and the toy-VOC generator."""
