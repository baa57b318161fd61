from wanotify.cli import main

main()
