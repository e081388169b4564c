"""Transfer learning on a person's own labelled images: dataset, features, head training, export."""
