"""Weight merges of same-architecture members, through mergekit."""

from ensembles.merging.build import (
    PROVENANCE_FILE,
    RECIPE_FILE,
    check_member_directory,
    is_complete,
    materialize,
    mergekit_config,
    read_provenance,
)
from ensembles.merging.members import MemberInfo, MergeError, check_members, describe_directory
from ensembles.merging.recipe import MergeMember, MergeRecipe, merge_method_names, merge_methods

__all__ = [
    "PROVENANCE_FILE",
    "RECIPE_FILE",
    "MemberInfo",
    "MergeError",
    "MergeMember",
    "MergeRecipe",
    "check_member_directory",
    "check_members",
    "describe_directory",
    "is_complete",
    "materialize",
    "merge_method_names",
    "merge_methods",
    "mergekit_config",
    "read_provenance",
]
