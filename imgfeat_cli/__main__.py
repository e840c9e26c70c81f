from imgfeat_cli.cli.app import main

main()
