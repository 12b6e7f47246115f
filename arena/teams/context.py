def teams(request):
    """The signed-in user's teams, for the navigation bar."""
    user = getattr(request, "user", None)
    if user is None or not user.is_authenticated:
        return {"my_memberships": []}
    return {"my_memberships": list(user.memberships.select_related("team"))}
