"""Weight merges of same-architecture members, through mergekit."""

from ensembles.merging.recipe import MergeMember, MergeRecipe, merge_method_names

__all__ = ["MergeMember", "MergeRecipe", "merge_method_names"]
