from arena_cli.main import main

main()
