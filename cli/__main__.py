from splat_portrait.cli.app import main

main()
