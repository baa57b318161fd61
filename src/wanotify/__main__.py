from wanotify.cli.main import main

main()
