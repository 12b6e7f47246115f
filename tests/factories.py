"""factory-boy factories for the rows tests build again and again: people, teams and their members,
suites, model entries and blends, runs and each entry's result in them.

Defaults are what most tests want and nothing they assert on; a test passes what it is about.
"""

from __future__ import annotations

import factory
from django.contrib.auth import get_user_model
from django.utils.text import slugify
from factory.django import DjangoModelFactory

from arena.benchmarks.models import Suite
from arena.benchmarks.services import import_suite
from arena.evaluations.models import EntryState, Run, RunEntry, State
from arena.registry.models import BlendMember, Entry, Kind
from arena.teams.models import Membership, Role, Team
from ensembles.suites import get_builtin
from tests.helpers import PASSWORD


class UserFactory(DjangoModelFactory):
    """A user who logs in with PASSWORD."""

    class Meta:
        model = get_user_model()

    username = factory.Sequence(lambda n: f"user-{n}")
    password = PASSWORD

    @classmethod
    def _create(cls, model_class, *args, **kwargs):
        return model_class.objects.create_user(*args, **kwargs)


class TeamFactory(DjangoModelFactory):
    """A team; ``members`` maps each user to their role: TeamFactory(members={owner: Role.OWNER})."""

    class Meta:
        model = Team
        skip_postgeneration_save = True

    name = factory.Sequence(lambda n: f"Team {n}")
    slug = factory.LazyAttribute(lambda team: slugify(team.name))

    @factory.post_generation
    def members(self, create, extracted, **kwargs):
        for user, role in (extracted or {}).items():
            MembershipFactory(team=self, user=user, role=role)


class MembershipFactory(DjangoModelFactory):
    class Meta:
        model = Membership

    team = factory.SubFactory(TeamFactory)
    user = factory.SubFactory(UserFactory)
    role = Role.MEMBER


class SuiteFactory(DjangoModelFactory):
    """A suite stored the way an upload is (import_suite): the built-in ``builtin`` of ``size`` items,
    or the library suite ``library``."""

    class Meta:
        model = Suite

    team = factory.SubFactory(TeamFactory)
    builtin = "arithmetic"
    size = 8
    seed = 0
    library = None

    @classmethod
    def _create(cls, model_class, team, builtin, size, seed, library):
        return import_suite(team, library or get_builtin(builtin, seed=seed, size=size))


class EntryFactory(DjangoModelFactory):
    """A model entry of the team; by default a GGUF file nothing loads (tests that only store results)."""

    class Meta:
        model = Entry
        skip_postgeneration_save = True

    team = factory.SubFactory(TeamFactory)
    name = factory.Sequence(lambda n: f"model-{n}")
    kind = Kind.GGUF
    config = factory.LazyAttribute(lambda entry: {"path": f"/m/{entry.name}.gguf"})


class BlendFactory(EntryFactory):
    """A blend of ``members`` (entries, in order) combined by ``strategy``."""

    name = factory.Sequence(lambda n: f"blend-{n}")
    kind = Kind.BLEND
    config = factory.Dict({})
    strategy = "majority_vote"

    @factory.post_generation
    def members(self, create, extracted, **kwargs):
        for position, member in enumerate(extracted or ()):
            BlendMember.objects.create(blend=self, member=member, position=position)


class RunFactory(DjangoModelFactory):
    """A run of the suite's team on its test split, finished unless told."""

    class Meta:
        model = Run

    suite = factory.SubFactory(SuiteFactory)
    team = factory.LazyAttribute(lambda run: run.suite.team)
    splits = factory.List(["test"])
    state = State.DONE


class RunEntryFactory(DjangoModelFactory):
    """One entry's progress and result in a run, done unless told."""

    class Meta:
        model = RunEntry

    run = factory.SubFactory(RunFactory)
    entry = factory.SubFactory(EntryFactory, team=factory.SelfAttribute("..run.team"))
    state = EntryState.DONE
