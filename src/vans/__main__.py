from vans.cli.main import main

main()
